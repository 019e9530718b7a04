"""Dashboard pages, one per file, run by `st.navigation` (not imported)."""

"""Streamlit dashboard: `streamlit run app/main.py` from the repository root."""

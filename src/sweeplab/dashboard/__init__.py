"""The local dashboard over the run store: an index of run records and a Streamlit app.

It reads only what runs wrote (records, ``metrics.csv``, ``plots/``) and never
imports training code, so it opens on a machine that only holds copied runs.
"""

"""Placeholder: the Streamlit app arrives with its own issue."""

import streamlit as st

st.title("deformscope")
st.write("The interactive app is not built yet. See the README for the figures and the models.")

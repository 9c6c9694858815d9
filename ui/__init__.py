"""A web page to try a PaliGemma checkpoint on one image: `python -m ui --checkpoint DIR` (extra: `.[ui]`).

`ui.logic` holds what the page does as plain functions (no gradio import); `ui.app` lays the page out with gradio.
"""

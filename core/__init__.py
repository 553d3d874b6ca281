"""What every package of rehearse shares, and nothing else.

Config loading and validation (``configlib``), atomic file writing (``fsutil``), state-dict
comparison (``weights``), the torchvision compatibility shim (``compat``), the dynamic batcher
and the body of the model services (``batcher``, ``service_base``: plain asyncio). This package
is the bottom of the import graph: it imports nothing else from the project and never Ray
(``tests/test_layering.py`` checks both).
"""

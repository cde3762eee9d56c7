"""qmlops in the notebook: ``%qmlops`` magics, ipywidgets and rich display.

Nothing here is imported by ``import qmlops_jupyter``: ``%load_ext qmlops_jupyter`` loads the
magics, and the widgets and renderers load when first used. Jobs submitted from a kernel
belong to the engine (the server's, when a Jupyter server started the kernel), not to the
kernel: restarting it loses nothing.
"""

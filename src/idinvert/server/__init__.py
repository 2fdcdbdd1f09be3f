"""``idinvert serve``: a local web editor over a model pack.

Upload a photo (or pick a sample) → its faces are found and aligned to the pack's framing → one
is inverted with in-domain inversion while a progress bar runs → sliders move the stored code
along the pack's attribute boundaries and re-render in one generator pass → the edited face is
pasted back into the photo and downloaded with its code. A second photo adds interpolation,
style mixing and semantic diffusion.

Example (what the command does)::

    from idinvert.server import ServerOptions, create_app, make_server
    app = create_app(idinvert.load_pack(), ServerOptions(steps=100))
    make_server(app, "127.0.0.1", 7860).serve_forever()

The app needs Flask (``pip install "idinvert[serve]"``).
"""

from .app import create_app, make_server
from .state import ServerOptions, ServerState, default_samples
from .editor import EditParams, Editor

__all__ = ["EditParams", "Editor", "ServerOptions", "ServerState", "create_app", "default_samples", "make_server"]

"""Old name of tests/support.py, kept only while uncommitted work (tests/test_lr_find.py) still imports it.

New tests import helpers from `support` and take fixtures (tiny_backbone, tiny_model,
one_thread) from conftest.py; delete this file once nothing imports it.
"""

from conftest import tiny_backbone  # noqa: F401
from support import TINY, TinyNet, build_tiny, make_image_folder, split_tiny, write_spec  # noqa: F401

"""Regime W scorer (private): arm config (``config``), derived quantities (``derived``) and the
s_end/s_path/s_cf/s_wm formulas (``scorer``, DESIGN §3), the process term of the ``[progress]`` variant
(``progress``). Import from the submodules."""

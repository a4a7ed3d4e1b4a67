"""Flows: the orchestration of whole jobs (verify now; build, infer and the simulated board
next). They are the only modules of ``bnnhw`` that import the hardware side (``rtl_gen``,
``sim``, ``boards``) and the host side (``host``); the CLI imports a flow only when its
command runs."""

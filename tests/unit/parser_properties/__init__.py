"""Property tests of every parser, defined once, run by two runners.

``tests/unit/test_parser_properties.py`` runs each property at a few hundred examples (the
suite stays fast) and checks that each one catches a broken copy of its parser (a property
that cannot fail is a defect). ``bench/parsers_fuzz.py`` runs each at 100,000 examples and
prints how many really ran. A property is registered with ``@prop(parser, *strategies,
broken=...)`` in one of the ``props_*`` modules.
"""

from __future__ import annotations

from . import props_agents, props_domain, props_files, props_inputs
from .core import PROPERTIES, Property

__all__ = ["PROPERTIES", "Property", "props_agents", "props_domain", "props_files", "props_inputs"]

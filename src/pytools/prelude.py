#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# @@FILE@@: @@ABOUT@@
# Written by `dinodiff tools @@NAME@@` (dinodiff @@VERSION@@) from dinodiff's tools/@@FILE@@.
# Self-contained: it carries the modules it imports from dinodiff's tools/, imported from here:
#   @@MODULES@@
# and runs without dinodiff on Python >= @@MIN_PYTHON@@ with these packages:
#   @@NEEDS@@
# Run it as the script itself: python3 @@FILE@@ --help
# (This part is written in old syntax on purpose: an old Python reads it and says what it needs.)
import sys

if sys.version_info[:2] < (@@MIN_PYTHON_TUPLE@@):
    sys.stderr.write("error: %s needs Python >= @@MIN_PYTHON@@; this is Python %s (%s)\n"
                     % (sys.argv[0], sys.version.split()[0], sys.executable))
    sys.exit(2)

import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import linecache  # noqa: E402

_DINODIFF_TOOL = "@@NAME@@"
_DINODIFF_VERSION = "@@VERSION@@"
_DINODIFF_SOURCES = {
@@SOURCES@@
}
_DINODIFF_VOCABULARY = {
@@VOCABULARY@@
}


def _dinodiff_compile(name, source):
    filename = "<dinodiff bundle>/" + name
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


class _DinodiffBundle(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the carried modules (before any module of the same name on sys.path), and
    `dinodiff_bundle`: the tool's name, dinodiff's version and vocabulary."""

    def find_spec(self, name, path=None, target=None):
        if name in _DINODIFF_SOURCES or name == "dinodiff_bundle":
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        module.__file__ = __file__
        if name == "dinodiff_bundle":
            import json

            module.TOOL, module.VERSION = _DINODIFF_TOOL, _DINODIFF_VERSION
            module.VOCABULARY = {k: json.loads(v) for k, v in _DINODIFF_VOCABULARY.items()}
            return
        exec(_dinodiff_compile(name + ".py", _DINODIFF_SOURCES[name]), module.__dict__)


sys.meta_path.insert(0, _DinodiffBundle())
exec(_dinodiff_compile("@@FILE@@", @@MAIN@@), globals())

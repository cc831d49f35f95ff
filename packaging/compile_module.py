# SPDX-License-Identifier: GPL-2.0-or-later
"""meson install script: byte-compile the installed agent module (MODULEDIR/__pycache__), under
$DESTDIR when meson installs into one, recording MODULEDIR itself as the source path.

Usage (from meson.build): python3 compile_module.py MODULEDIR"""

import compileall
import os
import sys

moduledir = sys.argv[1]
destdir = os.environ.get("DESTDIR", "")
target = os.path.join(destdir, moduledir.lstrip("/")) if destdir else moduledir
if not compileall.compile_dir(target, maxlevels=0, ddir=moduledir, quiet=1):
    sys.exit(f"cannot byte-compile {target}")

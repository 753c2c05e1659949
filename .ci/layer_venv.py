"""Put a base venv's packages on this interpreter's path: ``python layer_venv.py BASE_PYTHON``.

Run by the venv being layered (``.venv-backends``); writes ``_base.pth`` into its
site-packages with the base's site-packages, so pip in the layered venv sees the base's
packages as installed and adds only what is missing. Its own packages come first on the
path. Refuses a base of another Python version (compiled extensions would not load).
"""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path


def main(base_python: str) -> None:
    probe = ("import json, sys, sysconfig; "
             "print(json.dumps([sysconfig.get_paths()['purelib'], sys.version_info[:2]]))")
    base_lib, base_version = json.loads(subprocess.check_output([base_python, "-c", probe], text=True))
    if tuple(base_version) != sys.version_info[:2]:
        sys.exit(f"{base_python} is Python {base_version[0]}.{base_version[1]}, this venv is "
                 f"{sys.version_info[0]}.{sys.version_info[1]}: remove one, make both with one PYTHON")
    own = Path(sysconfig.get_paths()["purelib"])
    (own / "_base.pth").write_text(base_lib + "\n")
    print(f"{own}: layered on {base_lib}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    main(sys.argv[1])

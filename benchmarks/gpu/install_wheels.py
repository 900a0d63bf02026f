"""Picks the wheels in a folder that this Python lacks (diffusers always), for check.sh's `pip install --target`.

A wheel is chosen if its distribution is not installed, or if the installed version fails a requirement in the
Requires-Dist of diffusers' wheel (for example an older huggingface_hub). The image's own packages are otherwise
left alone, so torch/transformers keep the versions they were built with. Prints the chosen paths, one a line.
"""

import importlib.metadata as metadata
import re
import sys
import zipfile
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def main(folder: str) -> None:
    wheels = sorted(Path(folder).glob("*.whl"))
    requirements = {}
    for wheel in wheels:
        if _norm(wheel.name.split("-")[0]) == "diffusers":
            with zipfile.ZipFile(wheel) as archive:
                meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                for line in archive.read(meta).decode().splitlines():
                    if line.startswith("Requires-Dist:") and "extra ==" not in line:
                        spec = line.split(":", 1)[1].split(";")[0].strip()
                        requirements[_norm(re.split(r"[<>=!~ \[(]", spec, maxsplit=1)[0])] = spec
    for wheel in wheels:
        name = _norm(wheel.name.split("-")[0])
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        choose = name == "diffusers" or installed is None
        if not choose and name in requirements:
            try:
                from packaging.requirements import Requirement

                choose = not Requirement(requirements[name]).specifier.contains(installed, prereleases=True)
            except Exception:  # no packaging: keep the image's version
                pass
        print(f"{'install' if choose else 'keep   '} {wheel.name} (image has {installed})", file=sys.stderr)
        if choose:
            print(wheel)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".whl")

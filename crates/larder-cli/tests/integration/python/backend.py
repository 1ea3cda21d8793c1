"""A PEP 517 build backend of a few lines, so that the test package builds
without downloading anything."""
import base64, hashlib, io, os, tarfile, zipfile

NAME = open(os.path.join(os.path.dirname(__file__), "NAME")).read().split()
DIST, VERSION = NAME[0], NAME[1]
REQUIRES = NAME[2:]

def _metadata():
    lines = ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {VERSION}", "Requires-Python: >=3.8"]
    lines += [f"Requires-Dist: {r}" for r in REQUIRES]
    return "\n".join(lines) + "\n"

def get_requires_for_build_wheel(config_settings=None):
    return []

def get_requires_for_build_sdist(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    module = DIST.replace("-", "_")
    name = f"{module}-{VERSION}-py3-none-any.whl"
    files = {
        f"{module}/__init__.py": f"VERSION = {VERSION!r}\n",
        f"{module}-{VERSION}.dist-info/METADATA": _metadata(),
        f"{module}-{VERSION}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{module}-{VERSION}.dist-info/RECORD,,")
        z.writestr(f"{module}-{VERSION}.dist-info/RECORD", "\n".join(record) + "\n")
    return name

def build_sdist(sdist_directory, config_settings=None):
    base = f"{DIST.replace('-', '_')}-{VERSION}"
    name = base + ".tar.gz"
    here = os.path.dirname(os.path.abspath(__file__))
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for f in ["backend.py", "NAME", "pyproject.toml"]:
            t.add(os.path.join(here, f), f"{base}/{f}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name

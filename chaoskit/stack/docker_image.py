"""The offline "host environment" image: a container that runs this very Python environment.

No registry is reachable on the machines chaoskit is tested on, so nothing can be pulled.
Instead ``docker import`` turns a tiny root filesystem (empty /proc, /sys, /dev, /tmp, a
minimal /etc, and the host's /bin, /lib, /lib64 symlinks where the host has them) into
an image, and every container gets the host's /usr, the Python installation, the virtual
environment and the chaoskit sources bind-mounted read-only.  The image is tagged with a
hash of what goes into it, so it is built once and reused until the layout changes.

/sbin is a real, empty directory: Docker mounts its init (``/sbin/docker-init``) there.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

import chaoskit
from chaoskit.errors import BackendError

REPOSITORY = "chaoskit-hostenv"
IMAGE_LABEL = "chaoskit.image"
LAYOUT_VERSION = "1"
TOP_LEVEL = ("bin", "lib", "lib64", "lib32", "libx32")
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


def _symlinks() -> dict[str, str]:
    """Top-level host directories that are symlinks (merged /usr): recreated in the image."""
    return {n: os.readlink(f"/{n}") for n in TOP_LEVEL if os.path.islink(f"/{n}")}


def host_paths() -> list[str]:
    """Host directories every host-environment container mounts read-only, outermost only."""
    wanted = ["/usr"]
    wanted += [f"/{n}" for n in TOP_LEVEL if os.path.isdir(f"/{n}") and not os.path.islink(f"/{n}")]
    wanted += [
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.prefix),
        sys.prefix,
        str(Path(chaoskit.__file__).resolve().parent.parent),  # editable installs
    ]
    pythonpath = os.environ.get("PYTHONPATH", "")
    wanted += [os.path.realpath(p) for p in pythonpath.split(os.pathsep) if os.path.isdir(p)]
    result: list[str] = []
    for path in sorted(set(wanted), key=len):
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in result):
            result.append(path)
    return result


def rootfs_tar() -> bytes:
    """The image's root filesystem as a deterministic tar (fixed owners and mtimes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, *, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.uid, info.gid = kind, 0, 0, 0
            info.mode = 0o1777 if name == "tmp" else 0o755 if kind != tarfile.REGTYPE else 0o644
            info.linkname, info.size = target, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("proc", "sys", "dev", "etc", "tmp", "usr", "sbin", "root", "run", "var"):
            add(d, tarfile.DIRTYPE)
        for name, target in sorted(_symlinks().items()):
            add(name, tarfile.SYMTYPE, target=target)
        for name, text in sorted(ETC_FILES.items()):
            add(name, tarfile.REGTYPE, data=text.encode())
    return buffer.getvalue()


def image_tag() -> str:
    """``chaoskit-hostenv:<hash>``, the hash covering the root filesystem and the layout."""
    digest = hashlib.sha256(rootfs_tar() + LAYOUT_VERSION.encode())
    return f"{REPOSITORY}:{digest.hexdigest()[:16]}"


def ensure_image(client: Any) -> str:
    """The host-environment image's tag; imported into the engine when it is missing."""
    import docker.errors

    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.DockerException as e:
        raise BackendError(f"cannot look up image {tag!r}: {e}") from e
    repository, version = tag.split(":")
    try:
        client.api.import_image_from_data(
            rootfs_tar(),
            repository=repository,
            tag=version,
            changes=[f"LABEL {IMAGE_LABEL}=hostenv", "ENV PATH=/usr/local/bin:/usr/bin:/bin"],
        )
    except docker.errors.DockerException as e:
        raise BackendError(f"cannot import image {tag!r} into the Docker engine: {e}") from e
    return tag

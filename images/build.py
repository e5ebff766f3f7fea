"""Build and push the lanepaint images (`make images`, `make push`).

The base image (images/base/Dockerfile, built from the repository root) holds CUDA, Python,
torch, kfp and lanepaint; every image named in components/settings.yaml (one per GPU stage,
`cpu` for the CPU helpers) is a thin layer on it: images/<image>/Dockerfile if that exists,
else images/stage/Dockerfile. Tags are the git SHA (never ':latest'), optionally also a
release tag; OCI labels record the commit, source and version. A dirty tree is refused,
because the images would claim a commit they do not contain.

    python images/build.py [--registry R] [--tag T] [--also-tag v0.1.0] [--no-push]
    python images/build.py --push-only ...    # push what an earlier --no-push built
    python images/build.py --dry-run ...      # print the docker commands only
    python images/build.py --build-arg CUDA_IMAGE=... --network host --secret id=...,src=...
                                              # other bases, indexes (images/local.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components import settings as cfg  # noqa: E402

PLATFORM = "linux/amd64"  # GKE A100 nodes


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def clean_url(url: str) -> str:
    """A remote URL without user:token@ (labels are public)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def dockerfile_for(image: str) -> Path:
    own = REPO / "images" / image / "Dockerfile"
    return own if own.is_file() else REPO / "images" / "stage" / "Dockerfile"


def plan(
    registry: str,
    tag: str,
    also_tags: list[str],
    labels: dict[str, str],
    build: bool = True,
    push: bool = True,
    docker: str = "docker",
    build_options: list[str] | None = None,
) -> list[list[str]]:
    """The docker commands, in order: base first, then every stage image on top of it.
    ``build_options`` (e.g. other base images as --build-arg, --network, --secret) go to
    every build."""
    base = cfg.image_ref(cfg.BASE_IMAGE, tag, registry)
    label_args = [a for k, v in labels.items() for a in ("--build-arg", f"{k}={v}")]
    label_args = [*(build_options or []), *label_args]
    builds: list[list[str]] = []
    refs: list[str] = []

    def refs_for(image: str) -> list[str]:
        return [cfg.image_ref(image, t, registry) for t in [tag, *also_tags]]

    def build_cmd(dockerfile: str, image_refs: list[str], context: str, *args: str):
        tags = (a for r in image_refs for a in ("--tag", r))
        builds.append(
            [docker, "build", "--platform", PLATFORM, "--file", dockerfile, *args, *label_args]
            + [*tags, context]
        )
        refs.extend(image_refs)

    build_cmd("images/base/Dockerfile", refs_for(cfg.BASE_IMAGE), ".")
    for image, stages in cfg.stage_images().items():
        dockerfile = dockerfile_for(image)
        build_cmd(
            str(dockerfile.relative_to(REPO)),
            refs_for(image),
            str(dockerfile.parent.relative_to(REPO)),
            *("--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"IMAGE={image}"),
            *("--build-arg", f"STAGES={','.join(stages)}"),
        )
    pushes = [[docker, "push", r] for r in refs]
    return (builds if build else []) + (pushes if push else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=None, help="default: settings image_registry")
    parser.add_argument("--tag", default=None, help="default: git rev-parse --short=12 HEAD")
    parser.add_argument("--also-tag", action="append", default=[], help="e.g. a release tag")
    parser.add_argument("--no-push", action="store_true")
    parser.add_argument("--push-only", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--docker", default=os.environ.get("DOCKER", "docker"))
    parser.add_argument(
        "--build-arg", action="append", default=[], metavar="K=V", help="e.g. CUDA_IMAGE=..."
    )
    parser.add_argument("--network", help="the builds' network (host: indexes on 127.0.0.1)")
    parser.add_argument("--secret", action="append", default=[], help="id=ca-bundle,src=PATH")
    args = parser.parse_args(argv)
    options = [a for v in args.build_arg for a in ("--build-arg", v)]
    options += [a for v in args.secret for a in ("--secret", v)]
    options += ["--network", args.network] if args.network else []

    registry = args.registry or cfg.image_registry()
    tag = args.tag or _git("rev-parse", "--short=12", "HEAD")
    if not tag:
        print("error: no --tag and no git checkout to take the SHA from", file=sys.stderr)
        return 2
    try:
        for t in [tag, *args.also_tag]:
            cfg.image_ref("base", t, registry)  # refuses ':latest' and malformed tags
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.push_only and not args.allow_dirty and _git("status", "--porcelain"):
        print("error: uncommitted changes; commit first or pass --allow-dirty", file=sys.stderr)
        return 2
    labels = {
        "VERSION": project_version(),
        "REVISION": _git("rev-parse", "HEAD") or tag,
        "SOURCE": clean_url(_git("remote", "get-url", "origin")) or "unknown",
        "CREATED": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    commands = plan(
        registry,
        tag,
        args.also_tag,
        labels,
        build=not args.push_only,
        push=not args.no_push,
        docker=args.docker,
        build_options=options,
    )
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # Dockerfile.dockerignore needs BuildKit
    for command in commands:
        print("+", shlex.join(command), flush=True)
        if not args.dry_run:
            result = subprocess.run(command, cwd=REPO, env=env)
            if result.returncode:
                return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())

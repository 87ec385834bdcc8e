#!/usr/bin/env python3
"""The Helm side of tests/chart.rs: render or lint charts/sbmesh with Helm v4's own engine
(helm-python-sdk binds Helm's Go SDK; no helm binary), and validate objects against the
Kubernetes OpenAPI schemas (kubernetes-validate).

    render.py render CHART RELEASE NAMESPACE    values (JSON object) on stdin
    render.py lint CHART NAMESPACE KUBE_VERSION  values (JSON object) on stdin; strict
    render.py validate KUBE_VERSION              a JSON list of objects on stdin; strict
    render.py versions

Each prints one JSON object on stdout and exits 0, a Helm error included:
    render:   {"manifests": [{"template": PATH, "documents": [OBJECT, ...]}, ...]}
              or {"error": {"type": CLASS, "message": TEXT}}
    lint:     Helm's lint report {"total_charts_linted", "messages": [{"severity", "path",
              "error"}], "errors": [TEXT]} (severity 1 info, 2 warning, 3 error)
              or {"error": {...}}
    validate: {"results": [{"kind", "name", "error": TEXT or null}, ...]}
    versions: {"helm_python_sdk", "helm_c", "helm_sdk", "kubernetes_validate"}
Anything else (a bad command line, a missing package) exits non-zero with a traceback.
"""

import json
import sys

import yaml


def fail(exc):
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def render(chart_dir, release, namespace, values):
    import helm_python as helm

    try:
        with helm.Chart.load(chart_dir) as chart:
            rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as exc:
        return fail(exc)
    manifests = []
    for template in sorted(rendered):
        text = rendered[template]
        if template.endswith("NOTES.txt"):
            documents = [text]
        else:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        manifests.append({"template": template, "documents": documents})
    return {"manifests": manifests}


def lint(chart_dir, namespace, kube_version, values):
    import helm_python as helm

    try:
        return helm.lint(
            chart_dir, values, strict=True, namespace=namespace, kube_version=kube_version
        )
    except helm.HelmError as exc:
        return fail(exc)


def validate(kube_version, objects):
    import kubernetes_validate

    results = []
    for obj in objects:
        error = None
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            error = f"at /{path}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError as exc:
            error = exc.message
        results.append(
            {
                "kind": obj.get("kind"),
                "name": (obj.get("metadata") or {}).get("name"),
                "error": error,
            }
        )
    return {"results": results}


def versions():
    from importlib.metadata import version

    import helm_python as helm

    return {
        "helm_python_sdk": version("helm-python-sdk"),
        "helm_c": helm.helm_c_version(),
        "helm_sdk": helm.helm_sdk_version(),
        "kubernetes_validate": version("kubernetes-validate"),
    }


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "render":
        chart_dir, release, namespace = args
        answer = render(chart_dir, release, namespace, json.load(sys.stdin))
    elif command == "lint":
        chart_dir, namespace, kube_version = args
        answer = lint(chart_dir, namespace, kube_version, json.load(sys.stdin))
    elif command == "validate":
        (kube_version,) = args
        answer = validate(kube_version, json.load(sys.stdin))
    elif command == "versions":
        answer = versions()
    else:
        raise SystemExit(f"unknown command {command!r}; see the docstring")
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)

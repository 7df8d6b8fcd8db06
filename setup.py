"""Package layout: ``storage/``, ``policies/`` and ``adapters/`` install as ``memos.storage``,
``memos.policies`` and ``memos.adapters`` (PyPI has unrelated top-level packages with those
names, which a memory library must not overwrite). ``memos/storage`` etc. are links to
those folders, so that tools which walk the package's folder (mypy, import-linter, grimp)
see the package as it installs; the packages themselves come from the folders.
Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {"storage": "memos.storage", "policies": "memos.policies", "adapters": "memos.adapters"}

packages = find_packages(include=["memos", "memos.*"], exclude=[f"{n}*" for n in MAPPED.values()])
package_dir = {"memos": "memos"}
for folder, name in MAPPED.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=package_dir)

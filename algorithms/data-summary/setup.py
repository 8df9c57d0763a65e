from setuptools import find_packages, setup

# A vantage6 algorithm as vantage6's template lays one out: a package, its dependencies from
# PyPI, a Dockerfile. `algonet images build --algorithm algorithms/data-summary --tag NAME`
# packages it offline.
setup(
    name="data-summary",
    version="1.0.0",
    packages=find_packages(),
    install_requires=["vantage6-algorithm-tools==4.14.0", "pyarrow"],
)

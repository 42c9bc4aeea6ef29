"""intradist: intra-distillation and parameter-sensitivity analysis for PyTorch (fairseq plugin included)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def pinned_requirements() -> list:
    """The exact pins of requirements.txt (the one list that scripts/setup.sh installs)."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="intradist",
    version="0.1.0",
    description=__doc__,
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires="==3.11.*",
    packages=find_packages(include=["user_dir", "user_dir.*", "intradist", "intradist.*", "analysis", "analysis.*"]),
    install_requires=pinned_requirements(),
    entry_points={
        "console_scripts": [
            "intradist=intradist.cli:main",
            "analyze-sensitivity=analysis.cli:main",
        ]
    },
)

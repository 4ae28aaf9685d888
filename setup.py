"""Build hook for the optional C kernel; all metadata lives in setup.cfg.

The extension is optional: without a C compiler the build goes on and the worker uses its
pure-Python loop (worker/compute.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("worker._sha512", ["worker/_sha512.c"], optional=True, extra_compile_args=["-O2"])
    ]
)

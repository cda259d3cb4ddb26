"""Detector building blocks: plain nn.Modules with keyword-only constructors.

Models never parse architecture strings; ``nasx.spaces`` turns encodings into
these modules.
"""

"""Subcommands of the ``nasx`` command line, one module each (see ``nasx.cli``)."""

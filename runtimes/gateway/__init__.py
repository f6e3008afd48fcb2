"""The gateway: ``tokios-gateway`` (admin CLI in :mod:`runtimes.gateway.cli`, options in
:mod:`runtimes.gateway.options`, the asyncio server in ``runtimes.gateway.server``)."""

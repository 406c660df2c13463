"""pipelex-server: the REST API server that builds and executes Pipelex pipelines."""

from pipelex_server.version import __version__


def create_app(settings=None):  # type: ignore[no-untyped-def]
    from pipelex_server.app import create_app as _create_app

    return _create_app(settings)


from pipelex_server.settings import Settings  # noqa: E402

__all__ = ["Settings", "__version__", "create_app"]

"""The ``clipcache`` command line: thin click commands over :mod:`cachekit`."""

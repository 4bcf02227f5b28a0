"""``python -m mmhost.cache.decode_worker``: a process that decodes large artifacts for a
server (see ``mmhost/cache/decoder.py``). A module of its own so that running it does not
import the module it runs twice."""

from mmhost.cache.decoder import serve

if __name__ == "__main__":
    serve()

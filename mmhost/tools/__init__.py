"""What ships beside the library, never imported by it: the walkthrough (``demo``), the cache
experiment (``experiment``) and its charts (``plot``), and the synthetic houses they and the
tests train on (``houses``). ``mmhost demo`` / ``experiment`` / ``plot`` run them."""

"""The data plane's registry of names loaded through the container contract (``POST /models``):
per principal, a name -> the store key it resolved to and the url it was given, with how many
names point at each key (a key is unloaded when the last name goes). The routes
(``api/container.py``) read and write it through ``Host.names``; the cache's own view of what is
resident is ``ModelCache.loaded``."""

from __future__ import annotations

from mmhost.errors import ModelAlreadyLoaded, ModelNotLoaded, ValidationError

LOADING = ("", "")  # a reservation: the name is taken while its load runs


class Names:
    """Names loaded through ``POST /models``, one namespace per principal: principal ARN ->
    {name -> (store key, url it gave)}. A principal sees and touches only the names it loaded,
    so one can't take a name another will load (409), answer another's invocations with a
    model of its choosing, or learn from a 403 or 404 what another loaded. Without
    authentication everyone is the one anonymous principal, as the platform is. Touched only
    on the engine loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # names per principal
        self.by_owner: dict[str, dict[str, tuple[str, str]]] = {}
        self._refs: dict[str, int] = {}  # store key -> names (of anyone) pointing at it

    def holders(self, key: str) -> int:
        """How many names (of anyone) point at the store key ``key``."""
        return self._refs.get(key, 0)

    def names(self, owner: str) -> dict[str, tuple[str, str]]:
        return self.by_owner.get(owner, {})

    def target(self, owner: str, name: str) -> str:
        """What policies see as the target model: the store key when ``name`` is loaded,
        else the name itself (so a denied caller learns nothing about what is loaded)."""
        entry = self.names(owner).get(name)
        return name if entry is None or entry is LOADING else entry[0]

    def key(self, owner: str, name: str) -> str:
        entry = self.names(owner).get(name)
        if entry is None or entry is LOADING:
            raise ModelNotLoaded(name)
        return entry[0]

    def reserve(self, owner: str, name: str) -> None:
        mine = self.by_owner.setdefault(owner, {})
        if name in mine:
            raise ModelAlreadyLoaded(name)
        if len(mine) >= self.limit:
            raise ValidationError(
                f"{len(mine)} models are loaded under this caller's names; the limit is "
                f"{self.limit} (max_container_models): unload one first"
            )
        mine[name] = LOADING

    def commit(self, owner: str, name: str, key: str, url: str) -> None:
        self.by_owner[owner][name] = (key, url)
        self._refs[key] = self._refs.get(key, 0) + 1

    def drop(self, owner: str, name: str) -> bool:
        """Forget ``name``; True when no name of anyone points at its key any more."""
        mine = self.by_owner[owner]
        key, _ = mine.pop(name)
        if not mine:
            del self.by_owner[owner]
        if not key:  # a reservation
            return False
        self._refs[key] -= 1
        if self._refs[key]:
            return False
        del self._refs[key]
        return True

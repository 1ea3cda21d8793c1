"""Monolith caching's module name: ``from monolithcaching import
CacheManager`` runs on larder (see :class:`larder.CacheManager`)."""

from larder.caching import CacheManager

__all__ = ["CacheManager"]

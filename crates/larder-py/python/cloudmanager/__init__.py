"""cloud-manager's module name: ``import cloudmanager;
cloudmanager.CloudManager(database_path, storage_path, storage_size)`` runs
on larder (see :class:`larder.CloudManager`)."""

from larder.cloudmanager import CloudManager

__all__ = ["CloudManager"]

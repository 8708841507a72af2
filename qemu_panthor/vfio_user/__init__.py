"""vfio_user package."""

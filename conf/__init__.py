"""Makes conf/ importable as dlrun.conf, so an installed dlrun finds its configs."""

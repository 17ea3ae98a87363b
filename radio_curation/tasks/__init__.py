"""``run(cfg)`` for each entry point; importing this package registers the config resolvers."""

from radio_curation.tasks.resolvers import register_resolvers

register_resolvers()

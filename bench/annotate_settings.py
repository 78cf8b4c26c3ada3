"""Bench-only settings for bench/annotate.py: Concord's settings plus the floor view's URL."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.annotate_urls"

"""Phonos settings for bench/api_load: production URLs plus a bare view to compare against."""

from phonos.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

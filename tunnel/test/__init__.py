"""Tests for the tunnel package."""

"""Tests of the distributed backends under failure: clusters the tests start
themselves on loopback ports."""

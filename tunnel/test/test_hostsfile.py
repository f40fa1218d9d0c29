"""
Tests for L{tunnel.hostsfile}.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from tunnel.hostsfile import HostsFileError, readHostsFile, writeHostsFile
from tunnel.core.http import normaliseHost


class HostsFileTests(SynchronousTestCase):
    """Reading and atomically writing the hosts file."""

    def test_roundTrip(self) -> None:
        """What is written reads back the same, hosts lower-cased."""
        path = self.mktemp()
        writeHostsFile(path, {"a.example": "id=1", "b.example:8080": "id2"})
        self.assertEqual(readHostsFile(path), {"a.example": "id=1", "b.example:8080": "id2"})

    def test_missingFileIsEmpty(self) -> None:
        """A hosts file that does not exist yet reads as no hosts."""
        self.assertEqual(readHostsFile(self.mktemp()), {})

    def test_writtenOwnerOnlyAndNoTemporaryLeft(self) -> None:
        """The file is private to its owner and no temporary file is left."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "hosts")
        writeHostsFile(path, {"a.example": "secret"})
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(directory), ["hosts"])

    def test_failedWriteLeavesOldFile(self) -> None:
        """A write that fails half way leaves the old file intact."""
        path = self.mktemp()
        writeHostsFile(path, {"a.example": "old"})

        class Exploding(dict):
            def __getitem__(self, key):
                raise RuntimeError("disk on fire")

        self.assertRaises(RuntimeError, writeHostsFile, path, Exploding({"b.example": "new"}))
        self.assertEqual(readHostsFile(path), {"a.example": "old"})
        self.assertEqual(os.listdir(os.path.dirname(os.path.abspath(path))), [os.path.basename(path)])

    def test_malformedLineNamed(self) -> None:
        """A malformed line is reported with the file name and line number."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("a.example=x\nnot an entry\n")
        error = self.assertRaises(HostsFileError, readHostsFile, path)
        self.assertIn("line 2", str(error))

    def test_normaliseHost(self) -> None:
        """Host names are lower-cased; things that are not host names are refused."""
        self.assertEqual(normaliseHost(" Demo.Example.COM:8080 "), "demo.example.com:8080")
        for bad in ("", "a b", "-x.example", "x.example:port", "a/b"):
            self.assertRaises(ValueError, normaliseHost, bad)

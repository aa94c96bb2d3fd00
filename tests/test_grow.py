"""A library grows: from the default SQLite to a 3-node Galera cluster with its data, as the
operator's guide (docs/OPERATIONS.md, section 11) says, checked through the protocol."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.fake_openlibrary import FakeOpenLibrary
from tests.galera import GaleraCluster, galera_cluster  # noqa: F401 - the session fixture
from tests.test_cluster import node_cursor, with_database
from tests.test_dump import answers, build_library, differences, export, load, serve

pytestmark = pytest.mark.cluster


def test_a_sqlite_library_moves_to_galera_and_answers_the_same_on_every_node(
    tmp_path: Path,
    galera_cluster: GaleraCluster,  # noqa: F811 - the fixture imported above
    openlibrary_fake: FakeOpenLibrary,
) -> None:
    original = f"sqlite:///{tmp_path / 'waymark.db'}"
    with serve(tmp_path, original, openlibrary_fake) as server:
        build_library(server, original, tmp_path)
        before = answers(server)
    dump = tmp_path / "waymark.sql"
    export(original, dump)
    database = f"waymark_grow_{secrets.token_hex(3)}"
    node_urls = [with_database(url, database) for url in galera_cluster.urls]
    with node_cursor(galera_cluster.urls[0], galera=False) as cursor:
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    try:
        load(node_urls[0], dump)  # through node 1; Galera replicates it to the others
        for url in node_urls[1:]:  # a server on each other node answers as the original did
            with serve(tmp_path, url, openlibrary_fake) as server:
                assert differences(answers(server), before) == []
    finally:
        with node_cursor(galera_cluster.urls[0], galera=False) as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")

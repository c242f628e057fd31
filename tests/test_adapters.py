"""Adapters: template section in, native text out (table-driven, no daemons)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from adapters.base import RenderContext
from adapters.dovecot import format_scalar, libpq_quote, render_settings
from adapters.haproxy import render_haproxy_cfg
from adapters.memcached import memcached_args
from adapters.postfix import PostfixAdapter, render_main_cf, render_master_cf
from adapters.sogo import plist
from rupost.config import DatabaseSettings, NodeConfig
from rupost.paths import Layout


def ctx(tmp_path=Path("/srv/rp")) -> RenderContext:
    node = NodeConfig(database=DatabaseSettings(password="p@ss word'\\"))
    return RenderContext(Layout.at(tmp_path), node, node.database, tmp_path / "gen")


@pytest.mark.parametrize("main, line", [
    ({"smtpd_tls_auth_only": True}, "smtpd_tls_auth_only = yes"),
    ({"smtpd_relay_restrictions": ["permit_sasl_authenticated", "reject_unauth_destination"]},
     "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination"),
    ({"message_size_limit": 1048576}, "message_size_limit = 1048576"),
    ({"mydestination": ""}, "mydestination = "),
])
def test_postfix_main_cf(main, line):
    assert line in render_main_cf(main).splitlines()


def test_postfix_main_cf_refuses_newlines():
    with pytest.raises(ValueError):
        render_main_cf({"myhostname": "a\nrelayhost = evil"})


def test_postfix_master_cf_quotes_values_with_spaces():
    text = render_master_cf([{"name": "127.0.0.1:2525", "type": "inet", "private": "n", "chroot": "n",
                              "command": "smtpd", "options": {"smtpd_client_restrictions": "permit_sasl_authenticated, reject",
                                                              "syslog_name": "x/y", "empty": ""}},
                             {"name": "off", "type": "unix", "command": "smtp", "enabled": False}])
    lines = text.splitlines()
    assert "127.0.0.1:2525 inet n - n - - smtpd" in lines
    assert "  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }" in lines
    assert "  -o syslog_name=x/y" in lines and "  -o empty=" in lines
    assert not any(line.startswith("off ") for line in lines)


def test_postfix_lookup_tables_carry_the_database_and_are_private():
    files = PostfixAdapter().render({"main": {}, "master": [], "lookups": {
        "domains": {"query": "SELECT 1 FROM lookup_domains\n   WHERE name = '%s'"}}}, ctx())
    table = next(f for f in files if f.path == "pgsql-domains.cf")
    assert table.mode == 0o640 and table.group == "postfix"
    assert "query = SELECT 1 FROM lookup_domains WHERE name = '%s'" in table.content
    assert "dbname = rupost_data" in table.content


def test_postfix_lookup_table_reaches_the_database_over_a_unix_socket(pg, tmp_path):
    """A socket directory on a port other than 5432, a password that needs quoting: postfix's
    "unix:/dir" form would look for .s.PGSQL.5432 and fail every lookup with 451 4.3.0."""
    role, password = "rp_socket_probe", "s3cret:/@%&?'"
    pg.psql(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")
    hba = pg.data / "pg_hba.conf"
    if role not in hba.read_text():  # peer authentication is the default for local connections
        hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
        pg._run(pg.bin / "pg_ctl", "-D", pg.data, "reload")
    node = NodeConfig(database=DatabaseSettings(host=str(pg.base), port=pg.port, user=role, password=password,
                                                data="postgres"))
    files = PostfixAdapter().render({"main": {}, "master": [], "lookups": {
        "probe": {"query": "SELECT current_user || ' ' || current_database() || ' %s'"}}},
        RenderContext(Layout.at(tmp_path), node, node.database, tmp_path / "gen"))
    table = tmp_path / "pgsql-probe.cf"
    table.write_text(next(f for f in files if f.path == "pgsql-probe.cf").content)
    (tmp_path / "main.cf").write_text("")
    answer = subprocess.run(["postmap", "-c", str(tmp_path), "-q", "key", f"pgsql:{table}"],
                            capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == f"{role} postgres key"


def test_postfix_proxymap_serves_tables_only_master_cf_names():
    """proxymap refuses a table main.cf does not name: an smtpd whose -o override names one
    would exit at its first connection (seen when a custom template moved a check to master.cf)."""
    services = [{"name": "127.0.0.1:2525", "type": "inet", "command": "smtpd", "options": {
        "smtpd_recipient_restrictions": "check_recipient_access proxy:pgsql:/c/pgsql-x.cf, reject",
        "smtpd_sender_restrictions": "check_sender_access proxy:pgsql:/c/pgsql-main.cf"}},
        {"name": "off", "type": "unix", "command": "smtpd", "enabled": False,
         "options": {"smtpd_client_restrictions": "check_client_access proxy:pgsql:/c/pgsql-off.cf"}}]
    main = {"virtual_alias_maps": "proxy:pgsql:/c/pgsql-main.cf"}
    files = PostfixAdapter().render({"main": main, "master": services, "lookups": {}}, ctx())
    main_cf = next(f for f in files if f.path == "main.cf").content
    line = next(x for x in main_cf.splitlines() if x.startswith("proxy_read_maps = "))
    assert line.startswith("proxy_read_maps = $local_recipient_maps ") and "$smtpd_recipient_restrictions" in line
    assert line.endswith(" proxy:pgsql:/c/pgsql-x.cf")  # once; neither main's own table nor a disabled service's
    services[0]["options"].pop("smtpd_recipient_restrictions")
    files = PostfixAdapter().render({"main": main, "master": services, "lookups": {}}, ctx())
    assert "proxy_read_maps" not in next(f for f in files if f.path == "main.cf").content


def test_postfix_unknown_parameter_is_reported_with_path():
    problems = PostfixAdapter().check_model({"main": {"smtpd_tls_cert_fle": "x", "myhostname": "m"},
                                             "master": [], "lookups": {}})
    assert problems == ["components.postfix.main.smtpd_tls_cert_fle: unknown key (not a postfix parameter)"]


@pytest.mark.parametrize("value, out", [
    (True, "yes"), ("plain", "plain"), ("with space ", '"with space "'), ("a#b", '"a#b"'),
    ("</etc/x.pem", "</etc/x.pem"), ('quo"te', '"quo\\"te"'),
])
def test_dovecot_scalar_quoting(value, out):
    assert format_scalar(value) == out


def test_dovecot_sections_and_repeated_sections():
    lines = render_settings({"protocols": ["imap", "lmtp"], "service imap-login": {
        "inet_listener imap": {"port": 143, "haproxy": True}}, "passdb": [{"driver": "sql"}, {"driver": "static"}]})
    assert lines == ["protocols = imap lmtp", "service imap-login {", "  inet_listener imap {", "    port = 143",
                     "    haproxy = yes", "  }", "}", "passdb {", "  driver = sql", "}", "passdb {",
                     "  driver = static", "}"]


def test_libpq_connect_values_are_quoted():
    assert libpq_quote("p@ss word'\\") == "'p@ss word\\'\\\\'"


HAPROXY_MODEL = {
    "cluster": {"self": "b", "address": "10.0.0.2", "peers_port": 10000, "health_port": 20025,
                "nodes": [{"name": "b", "address": "10.0.0.2", "id": 2}, {"name": "a", "address": "10.0.0.1", "id": 1}]},
    "health_checks": [{"name": "postfix", "address": "127.0.0.1:10588"},
                      {"name": "nginx", "address": "127.0.0.1:10443", "send_proxy": True}],
    "listeners": [{"name": "smtp", "bind": "*:25", "local": "127.0.0.1:10025", "cluster_port": 11025},
                  {"name": "imaps", "bind": "*:993", "local": "127.0.0.1:10993", "cluster_port": 11993,
                   "accept_proxy": True}],
}


def test_haproxy_cluster_balancing_local_first_with_shared_stickiness():
    text = render_haproxy_cfg(HAPROXY_MODEL, ctx())
    lines = text.splitlines()
    assert "    localpeer b" in lines
    assert lines.index("    peer a 10.0.0.1:10000") < lines.index("    peer b 10.0.0.2:10000")
    assert "    stick-table type ip size 1m expire 30m peers rupost" in lines
    backend = lines[lines.index("backend be_smtp"):]
    # the local stack first, peers through their cluster port, one server id per node on every node
    assert backend[4] == ("    server b 127.0.0.1:10025 send-proxy-v2 id 2 check addr 127.0.0.1 port 20025 "
                          "inter 2s fall 2 rise 2")
    assert backend[5].startswith("    server a 10.0.0.1:11025 send-proxy-v2 id 1 backup check addr 10.0.0.1 port 20025")
    assert "    stick on src table sticky_clients" in backend
    assert "    bind 10.0.0.2:11025 accept-proxy" in lines and "    bind *:993 accept-proxy" in lines
    assert "    bind *:25" in lines
    assert "    monitor fail if { nbsrv(be_local_health) lt 2 }" in lines
    assert "    server nginx 127.0.0.1:10443 check inter 2s fall 1 rise 2 check-send-proxy" in lines


def test_haproxy_alone_never_refuses_a_client_by_health_check():
    """One node: no other server to send a client to, so no check can take the listener down
    (a restarting SOGo would otherwise refuse SMTP for seconds); /health still reports."""
    model = {**HAPROXY_MODEL, "cluster": {**HAPROXY_MODEL["cluster"], "nodes": [{"name": "b", "address": "10.0.0.2",
                                                                                "id": 2}]}}
    lines = render_haproxy_cfg(model, ctx()).splitlines()
    backend = lines[lines.index("backend be_smtp"):]
    assert backend[4] == "    server b 127.0.0.1:10025 send-proxy-v2 id 2"
    assert "    monitor fail if { nbsrv(be_local_health) lt 2 }" in lines


def test_haproxy_health_per_listener_names_only_the_components_it_needs():
    model = {**HAPROXY_MODEL, "health_checks": [
        {"name": "postfix", "address": "127.0.0.1:10588", "listeners": ["smtp"]},
        {"name": "nginx", "address": "127.0.0.1:10443", "send_proxy": True}]}  # no list: every listener
    lines = render_haproxy_cfg(model, ctx()).splitlines()
    down = [line for line in lines if "return status 503" in line]
    assert down == [
        '    http-request return status 503 content-type text/plain string "postfix down" '
        'if { path /health/smtp } !{ srv_is_up(be_local_health/postfix) }',
        '    http-request return status 503 content-type text/plain string "nginx down" '
        'if { path /health/smtp } !{ srv_is_up(be_local_health/nginx) }',
        '    http-request return status 503 content-type text/plain string "nginx down" '
        'if { path /health/imaps } !{ srv_is_up(be_local_health/nginx) }']
    assert lines[lines.index("backend be_imaps") + 3] == "    option httpchk GET /health/imaps"
    model["health_checks"][0]["listeners"] = ["smtp", "imap"]
    with pytest.raises(ValueError, match="health_checks postfix: no listener named imap"):
        render_haproxy_cfg(model, ctx())


def test_haproxy_refuses_a_node_missing_from_the_cluster():
    model = {**HAPROXY_MODEL, "cluster": {**HAPROXY_MODEL["cluster"], "self": "c"}}
    with pytest.raises(ValueError, match="cluster.self 'c' is not in cluster.nodes"):
        render_haproxy_cfg(model, ctx())


def test_memcached_options():
    assert memcached_args({"listen": "127.0.0.1:11211", "memory_mb": 64}) == [
        "-m", "64", "-l", "127.0.0.1", "-p", "11211", "-U", "0", "-c", "1024", "-u", "memcache"]


def test_sogo_plist_escapes_and_encodes_cyrillic():
    text = plist({"SOGoPageTitle": 'Почта "RuPost"', "WOWorkersCount": 3, "SOGoVacationEnabled": False,
                  "SOGoUserSources": [{"type": "sql"}]})
    assert 'SOGoPageTitle = "\\U041f\\U043e\\U0447\\U0442\\U0430 \\"RuPost\\"";' in text
    assert "WOWorkersCount = 3;" in text and "SOGoVacationEnabled = NO;" in text


def test_sogo_scopes_address_books_by_the_domain_column_and_groups_share_one():
    from adapters.sogo import SOGoAdapter, sogo_defaults

    model = {"listen": "127.0.0.1:20000", "memcached": "127.0.0.1:11211", "imap_server": "imap://127.0.0.1:143",
             "smtp_server": "smtp://127.0.0.1:25", "gal": True, "defaults": {}}
    alone = sogo_defaults(model, ctx())
    assert [s.get("DomainFieldName") for s in alone["SOGoUserSources"]] == ["domain", "domain"]
    assert "SOGoDomainsVisibility" not in alone and "domains" not in alone  # no domain is named in the file
    shared = sogo_defaults({**model, "address_book_shared_domains": [["a.example", "b-c.example"]]}, ctx())
    assert shared["SOGoDomainsVisibility"] == [["a.example", "b-c.example"]]
    # SOGo drops a visible domain that is not a key of "domains"; an empty entry changes nothing else
    assert shared["domains"] == {"a.example": {}, "b-c.example": {}}
    assert '"b-c.example" = {' in plist(shared["domains"])  # a key with a hyphen is quoted
    assert SOGoAdapter().check_model({**model, "address_book_shared_domains": [["a.example", "b.example"]]}) == []


def test_sogo_puts_each_ldap_bound_mail_domains_directory_in_its_domain_entry():
    """A top-level LDAP source would answer a directory user's identity without a domain
    (at random, before the SQL row), leaving the user's address books empty."""
    from adapters.sogo import sogo_defaults

    src = {"name": "corp", "uris": ["ldaps://dc.corp.example"], "bind_dn": "cn=svc", "bind_password": "pw",
           "base": "dc=corp", "domains": ["corp.example", "corp.example.net"]}
    model = {"listen": "127.0.0.1:20000", "memcached": "127.0.0.1:11211", "imap_server": "imap://127.0.0.1:143",
             "smtp_server": "smtp://127.0.0.1:25", "defaults": {}, "ldap_sources": [src],
             "address_book_shared_domains": [["corp.example", "other.example"]]}
    out = sogo_defaults(model, ctx())
    assert [s["type"] for s in out["SOGoUserSources"]] == ["sql"]
    assert out["domains"]["other.example"] == {}
    [net] = out["domains"]["corp.example.net"]["SOGoUserSources"]
    assert net["id"] == "rupost_ldap_corp_corp.example.net" and net["canAuthenticate"] is True
    assert "corp.example.net" in net["filter"] and "'*@corp.example'" not in net["filter"]
    assert out["domains"]["corp.example"]["SOGoUserSources"][0]["id"] == "rupost_ldap_corp_corp.example"


@pytest.mark.parametrize("groups, expected", [
    ([["a.example"]], "group 1 (a.example) names fewer than two domains"),
    ([["a.example", "a.example"]], "group 1 (a.example, a.example) names fewer than two domains"),
    ([["a.example", "b.example"], ["c.example", "a.example"]], "a.example is in groups 1 and 2"),
])
def test_sogo_refuses_shared_domain_groups_it_could_not_honour(groups, expected):
    from adapters.sogo import shared_domains_problems

    assert any(expected in p for p in shared_domains_problems(groups)), shared_domains_problems(groups)


def test_sogo_database_password_is_percent_encoded():
    from adapters.sogo import _db_url

    assert _db_url(ctx(), "t") == "postgresql://rupost:p%40ss%20word%27%5C@127.0.0.1:5432/rupost_data/t"


def test_postsrsd_command_line_attaches_each_value_and_names_the_secrets_outside_the_generation():
    from adapters.postsrsd import PostSRSdAdapter

    files = PostSRSdAdapter().render({"domain": "mail.example.com", "forward_port": 10601, "reverse_port": 10602,
                                      "exclude_domains": ["example.net", ".example.org"]}, ctx())
    args = PostSRSdAdapter.read_args_text(files[0].content)
    # getopt with optional arguments: "-X example.net" would be an extra argument
    assert args == ["-dmail.example.com", "-s/srv/rp/var/lib/rupost/postsrsd/secrets", "-l127.0.0.1", "-f10601",
                    "-r10602", "-a=", "-n4", "-N4", "-upostsrsd", "-c/srv/rp/run/rupost/postsrsd",
                    "-Xexample.net,.example.org"]


@pytest.mark.parametrize("model, problem", [
    ({"listen": "0.0.0.0"}, "components.postsrsd.listen: '0.0.0.0' is not a loopback address"),
    ({"listen": "::1", "forward_port": 1, "reverse_port": 1}, "components.postsrsd.reverse_port: the same port"),
    ({"hash_length": 4, "hash_minimum": 6}, "components.postsrsd.hash_minimum: greater than hash_length"),
])
def test_postsrsd_section_checks(model, problem):
    from adapters.postsrsd import PostSRSdAdapter

    problems = PostSRSdAdapter().check_model(model)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_haproxy_database_frontends_follow_patronis_primary_and_lookups_fall_back_to_replicas():
    """A highly available database: db_primary to the member answering /primary, db_lookup to
    the primary while one is up and to a replica otherwise; a member marked down has its
    sessions shut, so clients reconnect to the new primary at once."""
    members = [{"host": "10.0.0.11", "port": 5432, "api_port": 8008}, {"host": "10.0.0.12", "port": 5433,
                                                                       "api_port": 8009}]
    model = {**HAPROXY_MODEL, "database": {"members": members, "primary_port": 15432, "lookup_port": 15433}}
    lines = render_haproxy_cfg(model, ctx()).splitlines()
    primary = lines[lines.index("backend be_db_primary"):][:8]
    assert primary == ["backend be_db_primary", "    option httpchk GET /primary", "    http-check expect status 200",
                       "    retries 5", "    option redispatch 1",
                       "    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions",
                       "    server pg_10_0_0_11_5432 10.0.0.11:5432 check port 8008",
                       "    server pg_10_0_0_12_5433 10.0.0.12:5433 check port 8009"]
    replicas = lines[lines.index("backend be_db_replicas"):]
    assert replicas[1] == "    option httpchk GET /replica?lag=16MB"
    lookup = lines[lines.index("frontend fe_db_lookup"):][:8]
    assert lookup[1:] == [*(f"    bind 127.0.0.{i}:15433" for i in range(1, 7)), "    default_backend be_db_lookup"]
    # lookups: the primary as the active server, the replicas as backups, each tracking its check
    backend = lines[lines.index("backend be_db_lookup"):]
    assert backend[3] == "    default-server inter 1s fall 2 rise 1"  # reads: not shut when marked down
    servers = [line for line in backend if line.startswith("    server ")]
    # ... and those on a replica shut once a primary is up again (reads behind the primary)
    assert servers == [
        "    server pg_10_0_0_11_5432 10.0.0.11:5432 track be_db_primary/pg_10_0_0_11_5432 "
        "on-marked-up shutdown-backup-sessions",
        "    server pg_10_0_0_12_5433 10.0.0.12:5433 track be_db_primary/pg_10_0_0_12_5433 "
        "on-marked-up shutdown-backup-sessions",
        "    server pg_10_0_0_11_5432_replica 10.0.0.11:5432 backup track be_db_replicas/pg_10_0_0_11_5432",
        "    server pg_10_0_0_12_5433_replica 10.0.0.12:5433 backup track be_db_replicas/pg_10_0_0_12_5433"]
    assert "    bind 127.0.0.1:15432" in lines
    # a single server: no database section at all
    plain = {**HAPROXY_MODEL, "database": {"members": [], "primary_port": 15432, "lookup_port": 15433}}
    assert "fe_db_primary" not in render_haproxy_cfg(plain, ctx())


def test_ha_daemons_use_the_local_haproxy_and_the_core_every_member():
    from rupost.config import DatabaseMember
    from rupost.db import endpoints
    from rupost.db.engine import url_for
    from rupost.deploy.plan import render_context

    db = DatabaseSettings(host="10.0.0.11", password="pw", members=[DatabaseMember("10.0.0.11"),
                                                                    DatabaseMember("10.0.0.12", 5433)])
    node = NodeConfig(database=db)
    c = render_context(Layout.at(Path("/srv/rp")), node, Path("/srv/rp/gen"))
    assert (c.database.host, c.database.port, c.database.password) == ("127.0.0.1", 15432, "pw")
    assert (c.lookup_database.host, c.lookup_database.port) == ("127.0.0.1", 15433)
    files = PostfixAdapter().render({"main": {}, "master": [], "lookups": {"domains": {"query": "SELECT 1"}}}, c)
    table = next(f for f in files if f.path == "pgsql-domains.cf").content
    assert f"hosts = {' '.join(f'127.0.0.{i}:15433' for i in range(1, 7))}\n" in table
    assert endpoints.core_target(db) == {"host": "10.0.0.11,10.0.0.12", "port": "5432,5433",
                                         "target_session_attrs": "read-write"}
    assert url_for(db, "rupost").query == {"host": ("10.0.0.11:5432", "10.0.0.12:5433"),
                                           "target_session_attrs": "read-write"}
    # without members: today's direct connection, for the core and the daemons alike
    single = NodeConfig(database=DatabaseSettings(host="db.example.org", port=6543))
    c = render_context(Layout.at(Path("/srv/rp")), single, Path("/srv/rp/gen"))
    assert (c.database.host, c.database.port) == (c.lookup_database.host, c.lookup_database.port) == \
        ("db.example.org", 6543)


@pytest.mark.parametrize("text, member", [
    ("10.0.0.1", ("10.0.0.1", 5432, 8008)), ("db1:5433", ("db1", 5433, 8008)),
    ("db1:5433:8009", ("db1", 5433, 8009)), ("[fd00::1]:5433", ("fd00::1", 5433, 8008)),
])
def test_wizard_database_members_parse(text, member):
    from rupost.config import parse_member

    m = parse_member(text)
    assert (m.host, m.port, m.api_port) == member


@pytest.mark.parametrize("text", ["", "db1:", "db1:x", "db1:1:2:3", "db1:70000", "[fd00::1]x5432"])
def test_wizard_database_member_refused_with_the_expected_form(text):
    from rupost.config import parse_member
    from rupost.errors import ConfigError

    with pytest.raises(ConfigError, match="expected HOST\\[:PORT\\[:API_PORT\\]\\]"):
        parse_member(text)

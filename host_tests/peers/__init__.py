"""Real peers for interop tests: network namespaces, strongSwan charon, libreswan
pluto, tcpdump captures and tshark as the judge.

Everything needs root (network namespaces). netns, charon, pluto and capture live in
``tools/pnp/peers`` (``pnp.peers``, so that ``pnp wirebench`` runs from an installed
package); ``host_tests.peers.<name>`` is the same module object.  Facts behind the settings:
``shared/recipes/strongswan.md`` and ``shared/recipes/libreswan.md``.
Self-check (and usage example): ``host_tests/test_peers_selfcheck.py``.

Skipping
--------
``require(reason_pairs...)`` / :func:`require_real_peers` skip loudly (message on
stderr plus a warning) when something is missing, and *fail* when ``CI=true``.

netns -- ``from host_tests.peers.netns import Netns``
-----------------------------------------------------
``with Netns(n=2, net_id=1) as net:`` creates ``n`` namespaces named
``pnp<pid>_<k>_a``, ``..._b`` ... joined by a veth pair (n == 2) or a bridge in an
extra hub namespace (n > 2).  Each :class:`Namespace` ``ns`` has ``name``,
``ifname`` ("veth0"), ``ip6`` (``fd00:99:<net_id>::<i>``, /64, nodad), ``ip4``
(``10.99.<net_id>.<i>``, /24), ``addr(6|4)``; lo is up and neighbour entries are
permanent (no ND/ARP delay on the first packet).

* ``ns.run(cmd, check=True, timeout=30, **kw)`` -> CompletedProcess (text, captured);
  ``cmd`` a list, or a str for ``sh -c``.
* ``ns.popen(cmd, **kw)`` -> Popen (own session), killed on teardown.
* ``ns.popen_python(code_or_args, env=None, **kw)`` -> Popen of the repo's
  ``.venv/bin/python`` (str: ``-c CODE``; list: arguments, e.g. ``["-m", "pnp", ...]``),
  cwd = repo, PYTHONUNBUFFERED=1.  This is how our CPython node runs in a namespace.
* ``net.run(ns, cmd)``, ``net.popen(ns, cmd)``, ``net.popen_python(ns, x)`` take a
  Namespace, an index or a name.
* Teardown (also after errors): tracked processes SIGTERM -> SIGKILL, then every
  process left in the namespaces, then ``ip netns del``.
  ``netns.leftover_namespaces()`` lists this process's namespaces still present.

charon -- ``from host_tests.peers.charon import Charon``
----------------------------------------------------------
``c = Charon(ns, workdir, log_levels=None, extra_conf="", plugins=LOAD, plugin_dir=None)``
(``plugin_dir``: bind-mounted over /usr/lib/ipsec/plugins; the verifier's tests hide
plugins with it); files in ``workdir``:
``strongswan.conf`` (self-contained: load list with kdf, kernel-libipsec before
kernel-netlink, allow_peer_ts, fwmark 0x42 / !0x42), ``charon.vici``, ``charon.log``
(filelog ``default=1 ike=4 chd=4 mgr=2``; mgr=2 is what puts the IKE SPIs in the log),
``charon.out`` (stdout/stderr), ``run/`` (bind-mounted over /run in charon's private
mount namespace), ``swanctl/`` (swanctl.conf, pubkey/, private/).

* ``c.start(timeout=5)`` -- returns when a connection to the vici socket succeeds
  (charon listens; the socket file appears earlier), ~30-40 ms; CharonError at once
  (with the log tail) when charon exits, or after ``timeout``.
* ``c.add_conn(name, local_addrs="%any", remote_addrs="%any", *, local_id, remote_id="%any",
  psk=None, local_key=None, local_pubkey=None, remote_pubkey=None, children=None,
  proposals="aes128-sha256-x25519", encap=True, remote_port=None, local_port=None,
  mobike=False, extra=None)``.  ``psk=`` -> auth psk both ways + a secrets entry for the
  two ids.  Raw Ed25519: ``local_key`` (private PEM path), ``local_pubkey`` (own PEM),
  ``remote_pubkey`` (peer's PEM SPKI: a path or the PEM text -- what ``pnp keygen`` and
  ``pki --pub`` write).  With raw keys ``remote_id`` must be the ID the peer sends
  (charon binds the key to that ID; ``%any`` gives AUTHENTICATION_FAILED).
  ``children={"net": {}}`` -> tunnel mode, ``local_ts``/``remote_ts`` = the host
  addresses (/128 or /32; ``dynamic`` when the address is %any),
  ``esp_proposals="aes128-sha256"``, ``start_action="none"``; any key of the dict
  overrides/extends.  ``remote_addrs="%any"`` = responder only.  Initiator or responder
  is decided by who calls ``initiate``.
* ``c.load()`` writes swanctl.conf and runs ``swanctl --load-all``.
* ``c.initiate(child=None, ike=None, timeout=10, check=True)``, ``c.rekey_child(name)``,
  ``c.rekey_ike(name)``, ``c.terminate(ike=None, child=None)`` (no args: all conns) --
  CompletedProcess of swanctl; ``c.swanctl(*args)`` for anything else.
* ``c.list_sas()`` -> ``[{name, uniqueid, state, version, spi_i, spi_r (16 hex),
  initiator, local, remote, suite, children: [{name, uniqueid, reqid, state, mode,
  suite, spi_in, spi_out (8 hex), bytes_in/out, packets_in/out, local_ts, remote_ts}]}]``;
  ``c.wait_for(pred, timeout)`` polls it.
* ``c.keys()`` -> ``{"ike": [{ike, spi_i, spi_r, sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi,
  sk_pr}], "esp": [{ike, initiator, encr_i, encr_r, integ_i, integ_r, spi_in, src_in,
  dst_in, enc_in, int_in, spi_out, src_out, dst_out, enc_out, int_out}]}`` (bytes keys),
  one entry per IKE SA / CHILD SA incl. rekeys.  ``charon.esp_sa_rows(keys)`` flattens
  the ESP part to ``{src, dst, spi, enc, int}`` per direction; ``c.write_keydir(dir)``
  writes both Wireshark tables.
* ``c.log_text()``, ``c.stop()`` (SIGTERM, <= 5 s, SIGKILL).
* ``charon.gen_ed25519(dir, name)`` -> (private PEM, public PEM SPKI) via ``pki``.

How charon 5.9.8 logs keys (seen here): a hex dump is a head line
``NN[IKE] <conn|id> Sk_ei secret => 16 bytes @ 0x7f...`` followed by lines
``NN[IKE] <conn|id>    0: CF 62 9D ...  ascii`` (16 bytes a line, offset in decimal).
IKE labels: ``Sk_d secret``, ``Sk_ai secret``, ``Sk_ar secret``, ``Sk_ei secret``,
``Sk_er secret``, ``Sk_pi secret``, ``Sk_pr secret`` (also SKEYSEED, the DH secret and
the PSK as ``secret``).  CHILD labels ([CHD]): ``encryption initiator key``,
``encryption responder key``, ``integrity initiator key``, ``integrity responder key``,
then ``adding inbound ESP SA`` / ``  SPI 0x2a172ba5, src PEER dst ME`` and ``adding
outbound ESP SA`` / ``  SPI 0x..., src ME dst PEER``.  The CHILD initiator sends with
the initiator keys; which side initiated is taken from the last ``parsed ... request`` /
``parsed ... response`` line of that IKE SA before the keys.  IKE SPIs: mgr=2 line
``checkin IKEv2 SA conn[1] with SPIs 2607ff3cc6e55fc2_i c21290b3928f72fc_r``.
On a responder the context is ``<1>`` until the IKE SA gets its name.

pluto -- ``from host_tests.peers.pluto import Pluto, ensure_libreswan``
------------------------------------------------------------------------
``ensure_libreswan(dir=.deps/libreswan)`` (CLI ``python -m host_tests.peers.pluto
--ensure``) unpacks ``apt-get download libreswan`` with ``dpkg-deb -x`` and installs
the runtime libraries if missing; ``pluto.available()`` checks without downloading.
``p = Pluto(ns, workdir)``; ``p.add_conn(name, left, right="%any", authby="null",
leftid="%null", rightid="%null", ike="aes128-sha2_256;dh31", esp="aes128-sha2_256",
encapsulation="yes", type="tunnel", auto="add", **extra)``; ``p.add_psk(l, r, s)``;
``p.start()`` (initnss, config with listen=left and dnssec-enable=no, pluto in a mount
namespace with the libexec overlay, stderr -> ``pluto.log``, waits until whack answers,
the conns are loaded and an IKE interface on port 500 is listed -- pluto adds conns
before it binds its sockets); ``p.impair("omit-v2-ike-auth-child")`` (childless initiator),
``p.impair("revival")``; ``p.initiate(name)`` (whack output in stdout),
``p.showstates()``, ``p.terminate(name)``, ``p.whack(*args)``, ``p.log_text()``,
``p.wait_log(text, timeout)``, ``p.stop()``.
Success marker: ``authenticated peer using authby=null``.

verify -- ``python -m host_tests.peers.verify``
-----------------------------------------------
Set-up verification (run by ``scripts/setup.sh`` as root): charon with this harness's
strongswan.conf and plugin list, pluto, tcpdump, tshark, socat, the MicroPython
WebAssembly runner and mpy-cross, each used as the tests use it; one line per problem
naming the package to install, exit 1.  ``verify.run(only=None)`` -> problem lines.
``--stamp FILE`` skips an unchanged installation.  See its module docstring.

capture -- ``from host_tests.peers import capture``
-----------------------------------------------------
* ``with capture.Capture(ns, "veth0", "udp", path):`` -- tcpdump ``--immediate-mode -U``;
  start waits for "listening on", stop sends SIGINT and waits (complete pcap).
* ``capture.tshark_fields(pcap, fields, options=None, keydir=None, display_filter=None)``
  -> rows of str; ``capture.tshark(pcap, args, ...)``, ``capture.tshark_verbose(...)``.
  ``options``: dict or list of (key, value) -> ``-o key:value``.
  ``keydir`` -> ``WIRESHARK_CONFIG_DIR``.
* ``capture.write_keydir(dir, esp_rows, ike_entries)`` writes ``esp_sa`` and
  ``ikev2_decryption_table``; ``capture.uat_options(esp_rows, ike_entries)`` gives the same
  as ``-o uat:...`` pairs (plus the ESP decode/ICV switches ``capture.ESP_OPTIONS``).
  Formats that work with tshark 4.0.17:
  ``"IPv6","fd00::1","fd00::2","0x132ae793","AES-CBC [RFC3602]","0x<16 B>","HMAC-SHA-256-128 [RFC4868]","0x<32 B>"``
  (esp_sa: every field quoted; "IPv4" for v4) and
  ``<spi_i 16 hex>,<spi_r>,<SK_ei>,<SK_er>,"AES-CBC-128 [RFC3602]",<SK_ai>,<SK_ar>,"HMAC_SHA2_256_128 [RFC4868]"``
  (ikev2_decryption_table: bare hex, algorithm names quoted).
* ``capture.check_decryption(pcap, keydir)`` -> counts ``esp``, ``esp_good``, ``esp_bad``,
  ``ike_encrypted``, ``ike_decrypted``, ``ike_correct``, ``ike_incorrect`` (a wrong key
  shows ``[incorrect, should be ...]``).
* ``capture.ike_messages(pcap)``, ``capture.handshakes(pcap)`` (per IKE SA: wire_time
  IKE_SA_INIT request -> IKE_AUTH response, UDP payload bytes with and without non-ESP
  markers), ``capture.handshake_stats(pcap)`` (the first one).
"""

import os
import sys
import warnings


def require(ok_reason, pytest_module=None):
    """Skip loudly (or fail when CI=true) unless ``ok_reason == (True, "")``."""
    ok, reason = ok_reason
    if ok:
        return
    import pytest
    msg = "REAL-PEER TEST NOT RUN: " + reason
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI=true: this must run)")
    sys.stderr.write("\n*** %s ***\n" % msg)
    warnings.warn(msg)
    pytest.skip(msg)


def require_real_peers(charon=True, pluto=False, capture=True):
    """For interop tests: root + netns, and the requested tools, else skip/fail."""
    from host_tests.peers import netns
    require(netns.can_use_netns())
    if charon:
        from host_tests.peers import charon as _c
        require(_c.available())
    if capture:
        from host_tests.peers import capture as _cap
        require(_cap.available())
    if pluto:
        from host_tests.peers import pluto as _p
        ok, why = _p.available()
        if not ok and os.environ.get("CI") == "true":
            try:
                _p.ensure_libreswan()
                ok, why = _p.available()
            except Exception as e:
                why = "%s; ensure_libreswan failed: %s" % (why, e)
        require((ok, why))

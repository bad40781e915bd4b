"""Plain UDP applications for namespaces: an echo server and a one-shot client.

Run with ``ns.popen_python(["-c", ECHO_SERVER, addr, port, count])`` /
``ns.popen_python(["-c", CLIENT, addr, port, text])``; the venv python is used.
"""

ECHO_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(10)
for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
    data, peer = s.recvfrom(2000)
    print("got", data.decode(), peer[0], flush=True)
    s.sendto(b"echo:" + data, peer)
"""

CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(2000)[0].decode(), flush=True)
"""

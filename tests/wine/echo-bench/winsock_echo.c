/* The user-mode comparator of `cargo xtask echo-bench`: what wsk_echo.sys does with
 * Parameters\Bytes, done with Winsock (ws2_32) in an ordinary Win32 process, in the same Wine
 * prefix, against the same echo server.
 *
 *   winsock_echo.exe HOST PORT MESSAGE BYTES
 *
 * Connects to HOST:PORT (an IPv4 literal), then moves BYTES bytes — MESSAGE repeated, cut at
 * BYTES — exactly as the driver does: in chunks of as many whole messages as fit in 64 KiB, lock
 * step (a chunk is sent, then received back in full and compared byte for byte with what was
 * sent there, then the next one is sent). Times the transfer, first send to last byte checked,
 * with QueryPerformanceCounter, and prints one line:
 *
 *   winsock ok, N bytes in M.MMM ms
 *
 * or `winsock failed: <step> <error>` on stderr, with exit status 1.
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -o winsock_echo.exe winsock_echo.c -lws2_32
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64 * 1024)

static int fail(const char *step, int error)
{
    fprintf(stderr, "winsock failed: %s %d\n", step, error);
    return 1;
}

int main(int argc, char **argv)
{
    WSADATA wsa;
    struct sockaddr_in server;
    SOCKET s;
    LARGE_INTEGER frequency, started, ended;
    unsigned long long total, sent = 0, received = 0;
    size_t message_len, chunk, i;
    char *out, *back, *end;
    unsigned long port;

    if (argc != 5) {
        fprintf(stderr, "usage: winsock_echo HOST PORT MESSAGE BYTES\n");
        return 2;
    }
    port = strtoul(argv[2], &end, 10);
    if (*end || port == 0 || port > 65535)
        return fail("port", 0);
    total = strtoull(argv[4], &end, 10);
    if (*end || total == 0 || total > 0xFFFFFFFFull)
        return fail("bytes", 0);
    message_len = strlen(argv[3]);
    if (message_len == 0 || message_len > 512)
        return fail("message", 0);
    /* As many whole messages as fit in 64 KiB, or all of the transfer when that is less. */
    chunk = CHUNK / message_len * message_len;
    if (chunk > total)
        chunk = (size_t)total;
    out = malloc(chunk);
    back = malloc(chunk);
    if (!out || !back)
        return fail("buffer", 0);
    for (i = 0; i < chunk; i++)
        out[i] = argv[3][i % message_len];

    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return fail("WSAStartup", 0);
    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1)
        return fail("host", 0);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return fail("socket", WSAGetLastError());
    if (connect(s, (struct sockaddr *)&server, sizeof server) != 0)
        return fail("connect", WSAGetLastError());

    QueryPerformanceFrequency(&frequency);
    QueryPerformanceCounter(&started);
    while (received < total) {
        if (sent == received) {
            size_t n = total - sent < chunk ? (size_t)(total - sent) : chunk, done = 0;
            while (done < n) {
                int k = send(s, out + done, (int)(n - done), 0);
                if (k <= 0)
                    return fail("send", WSAGetLastError());
                done += (size_t)k;
            }
            sent += n;
            continue;
        }
        {
            int k = recv(s, back, (int)chunk, 0);
            size_t at = (size_t)(received % chunk);
            if (k == 0)
                return fail("receive", 0);
            if (k < 0)
                return fail("receive", WSAGetLastError());
            /* More than was sent, or other bytes than were sent there. */
            if (received + (unsigned long long)k > sent || memcmp(back, out + at, (size_t)k) != 0)
                return fail("compare", 0);
            received += (unsigned long long)k;
        }
    }
    QueryPerformanceCounter(&ended);
    printf("winsock ok, %llu bytes in %.3f ms\n", received,
           (double)(ended.QuadPart - started.QuadPart) * 1000.0 / (double)frequency.QuadPart);
    fflush(stdout);
    shutdown(s, SD_BOTH);
    closesocket(s);
    WSACleanup();
    free(out);
    free(back);
    return 0;
}

/* An instant stand-in for `codex exec`, in C so that its own start-up (~1 ms) does not hide the
 * daemon's per-job cost: reads the prompt to EOF, prints thread.started, writes a minimal
 * 0.169-shape session log holding a 1x1 PNG under $CODEX_HOME/sessions/YYYY/MM/DD/, and appends
 * one line per call to $INSTANT_CODEX_RECORD. The same behaviour as instant_codex.py. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *PNG_B64 =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgZOcFAAAiABbQMsz1AAAAAElFTkSuQmCC";

static void mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') { *p = 0; mkdir(path, 0755); *p = '/'; }
    }
    mkdir(path, 0755);
}

int main(int argc, char **argv) {
    struct timeval now;
    gettimeofday(&now, NULL);
    if (argc > 1 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        puts("codex-cli 0.169.0");
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "exec")) { fputs("instant codex: only exec\n", stderr); return 2; }
    char buf[65536];
    while (read(0, buf, sizeof buf) > 0) {}
    const char *record = getenv("INSTANT_CODEX_RECORD");
    if (record) {
        FILE *r = fopen(record, "a");
        if (r) { fprintf(r, "{\"t\": %ld.%06ld, \"pid\": %d}\n", (long)now.tv_sec, (long)now.tv_usec, (int)getpid()); fclose(r); }
    }
    /* A UUIDv7: 48 bits of milliseconds, version 7, variant 2, random bits. */
    unsigned char rnd[10];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != sizeof rnd) return 1;
    close(fd);
    unsigned long long ms = (unsigned long long)now.tv_sec * 1000 + now.tv_usec / 1000;
    char tid[37];
    snprintf(tid, sizeof tid, "%08llx-%04llx-7%03x-%04x-%02x%02x%02x%02x%02x%02x",
             ms >> 16, ms & 0xffff, ((rnd[0] << 8) | rnd[1]) & 0xfff,
             (((rnd[2] << 8) | rnd[3]) & 0x3fff) | 0x8000, rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9]);
    printf("{\"type\":\"thread.started\",\"thread_id\":\"%s\"}\n{\"type\":\"turn.started\"}\n", tid);
    fflush(stdout);
    const char *home = getenv("CODEX_HOME");
    struct tm local, utc;
    localtime_r(&now.tv_sec, &local);
    gmtime_r(&now.tv_sec, &utc);
    char day[16], clock[32], stamp[32], folder[4096], path[4200];
    strftime(day, sizeof day, "%Y/%m/%d", &local);
    strftime(clock, sizeof clock, "%Y-%m-%dT%H-%M-%S", &local);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S.000Z", &utc);
    snprintf(folder, sizeof folder, "%s/sessions/%s", home ? home : ".", day);
    mkdirs(folder);
    snprintf(path, sizeof path, "%s/rollout-%s-%s.jsonl", folder, clock, tid);
    FILE *log = fopen(path, "w");
    if (!log) return 1;
    fprintf(log, "{\"timestamp\":\"%s\",\"type\":\"session_meta\",\"payload\":{\"id\":\"%s\","
                 "\"cli_version\":\"0.169.0\",\"source\":\"exec\"},\"ordinal\":0}\n", stamp, tid);
    fprintf(log, "{\"timestamp\":\"%s\",\"type\":\"event_msg\",\"payload\":{\"type\":\"item_completed\","
                 "\"thread_id\":\"%s\",\"turn_id\":\"turn-1\",\"item\":{\"type\":\"Extension\","
                 "\"kind\":\"image_gen.generation\",\"id\":\"exec-1\",\"status\":\"completed\","
                 "\"revisedPrompt\":null,\"result\":\"%s\",\"failure\":null,\"savedPath\":null}},"
                 "\"ordinal\":1}\n", stamp, tid, PNG_B64);
    fprintf(log, "{\"timestamp\":\"%s\",\"type\":\"event_msg\",\"payload\":{\"type\":\"task_complete\","
                 "\"turn_id\":\"turn-1\",\"last_agent_message\":\"Done.\"},\"ordinal\":2}\n", stamp);
    fclose(log);
    puts("{\"type\":\"item.completed\",\"item\":{\"id\":\"item_0\",\"type\":\"agent_message\",\"text\":\"Done.\"}}");
    puts("{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":1,\"cached_input_tokens\":0,\"output_tokens\":1}}");
    return 0;
}

import { EFD_CLOEXEC, Kernel, Libc, O_CLOEXEC, POLLIN, SIGABRT } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { kselftest } from "../src/harness.js";
import { fork, waitpid } from "../src/test-fork.js";

function machine() {
  const kernel = new Kernel({ ramBytes: 1n << 26n });
  return { libc: new Libc(kernel) };
}

function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

describe("fork in a test (shared _metadata, one teardown)", () => {
  it("a child's failing ASSERT fails the test; the child runs the teardown and dies of SIGABRT", () => {
    const teardowns: number[] = [];
    const seen: number[] = [];
    const { harness, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, TEST_F } = kselftest(machine);
    const f = FIXTURE("f", () => ({ fd: -1 }));
    FIXTURE_SETUP(f, (self, _v, t) => {
      self.fd = t.sys.libc.eventfd(0, 0);
    });
    FIXTURE_TEARDOWN(f, (self, _v, t) => {
      teardowns.push(t.sys.libc.pid);
      t.ASSERT_EQ(0, t.sys.libc.close(self.fd));
    });
    TEST_F(f, "child_asserts", (_self, _v, t) => {
      const child = fork(t, (c) => {
        c.ASSERT_EQ(1, 2);
        return 0;
      });
      t.ASSERT_NE(-1, child.pid);
      const status = { value: -1 };
      t.ASSERT_EQ(child.pid, waitpid(t, child, status));
      seen.push(status.value, child.pid);
    });
    TEST_F(f, "child_exits", (_self, _v, t) => {
      const child = fork(t, () => 100);
      const status = { value: -1 };
      t.ASSERT_EQ(child.pid, waitpid(t, child, status));
      seen.push(status.value, t.sys.libc.pid);
    });
    const [asserts, exits] = harness.instances();

    const a = asserts!.run();
    expect(a.status).toBe("fail");
    expect(a.log.join("\n")).toContain("(child): Expected 1 == 2");
    const [status, childPid] = seen.splice(0);
    expect(status).toBe(SIGABRT);
    // The teardown ran once, in the child, on the child's copy of the descriptor.
    expect(teardowns.splice(0)).toEqual([childPid]);

    const e = exits!.run();
    expect(e.status).toBe("pass");
    const [status2, parentPid] = seen.splice(0);
    expect(status2! >> 8).toBe(100);
    expect(teardowns.splice(0)).toEqual([parentPid]);
  });

  it("a sleeping child runs on at waitpid once woken; a parent waiting on a dead child fails", () => {
    const { harness, TEST } = kselftest(machine);
    TEST("pipe_wakes_child", (t) => {
      const { libc } = t.sys;
      const pipefds: [number, number] = [-1, -1];
      const efd = libc.eventfd(0, EFD_CLOEXEC);
      t.ASSERT_EQ(0, libc.pipe2(pipefds, O_CLOEXEC));
      const child = fork(t, function* (c) {
        const cl = c.sys.libc;
        cl.close(pipefds[1]);
        if (cl.write(efd, u64(1n)) !== 8) return 100;
        yield () => cl.poll([{ fd: pipefds[0], events: POLLIN, revents: 0 }], 0) > 0;
        return cl.read(pipefds[0], new Uint8Array(1)) === 0 ? 7 : 100;
      });
      libc.close(pipefds[0]);
      t.ASSERT_EQ(8, libc.read(efd, new Uint8Array(8)));
      t.ASSERT_EQ(0, libc.close(pipefds[1]));
      const status = { value: -1 };
      t.ASSERT_EQ(child.pid, waitpid(t, child, status));
      t.ASSERT_EQ(7, status.value >> 8);
    });
    TEST("never_woken", (t) => {
      const pipefds: [number, number] = [-1, -1];
      t.ASSERT_EQ(0, t.sys.libc.pipe2(pipefds, 0));
      const child = fork(t, function* (c) {
        yield () => c.sys.libc.poll([{ fd: pipefds[0], events: POLLIN, revents: 0 }], 0) > 0;
        return 0;
      });
      waitpid(t, child);
    });
    TEST("dead_child_never_signals", (t) => {
      const efd = t.sys.libc.eventfd(0, 0);
      fork(t, (c) => {
        c.ASSERT_TRUE(false);
        return c.sys.libc.write(efd, u64(1n));
      });
      t.sys.libc.read(efd, new Uint8Array(8));
    });
    const [wakes, never, dead] = harness.instances();
    const w = wakes!.run();
    expect(w.log).toEqual([]);
    expect(w.status).toBe("pass");
    const n = never!.run();
    expect(n.status).toBe("fail");
    expect(n.log.join("\n")).toContain("task would sleep forever: waitpid");
    const d = dead!.run();
    expect(d.status).toBe("fail");
    expect(d.log.join("\n")).toContain("task would sleep forever: eventfd read");
  });
});

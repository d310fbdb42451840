import { describe, expect, it } from "vitest";
import { createSystem } from "./ioctl-helpers.js";

describe("IommufdCtx.objectsInOrder", () => {
  it("yields the objects in id order after ids freed in the middle are given out again", () => {
    const sys = createSystem();
    const ids = [0, 1, 2, 3, 4].map(() => sys.fd.ioasAlloc());
    sys.fd.destroy(ids[1]!);
    sys.fd.destroy(ids[3]!);
    sys.fd.destroy(ids[0]!);
    const again = [0, 1, 2].map(() => sys.fd.ioasAlloc());
    const live = [ids[2]!, ids[4]!, ...again].sort((a, b) => a - b);
    expect([...sys.ctx.objectsInOrder()].map((o) => o.id)).toEqual(live);
    // Reused ids sit after the older ones in the table's own order.
    expect(again.some((id) => id < ids[4]!)).toBe(true);
  });
});

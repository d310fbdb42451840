import { createSelftestEnv } from "../src/test-system.js";
import {
  iommuTestCmd,
  _test_ioctl_ioas_alloc,
  _test_cmd_mock_domain,
  _test_ioctl_ioas_map,
  _test_ioctl_ioas_unmap,
  ref,
} from "../src/iommufd-utils.js";
import { MAP_SHARED, MAP_ANONYMOUS } from "@x/kernel";
const env = createSelftestEnv({ bufferSize: 65536, hugeAligned: true });
const { libc } = env;
const fd = libc.open("/dev/iommu", 2);
const ioas = ref(0);
_test_ioctl_ioas_alloc(env, fd, ioas);
const ids = ref({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });
console.log("mock", _test_cmd_mock_domain(env, fd, ioas.v, ids), libc.errno);
const buf = libc.mmap(0n, 32768, 3, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
for (let start = 0; start < 32768; start += 2048) {
  for (let end = start + 2048; end < 32768; end += 2048) {
    const iova = ref(0n);
    console.log(start, end);
    const rc = _test_ioctl_ioas_map(env, fd, ioas.v, buf + BigInt(start), end - start, iova, 6);
    console.log(" map", rc, libc.errno, iova.v);
    const rc2 = _test_ioctl_ioas_unmap(env, fd, ioas.v, iova.v, end - start);
    console.log(" unmap", rc2, libc.errno);
  }
}

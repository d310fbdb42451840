import { createSelftestEnv } from "../src/test-system.js";
import {
  _test_ioctl_ioas_alloc,
  _test_cmd_mock_domain,
  _test_ioctl_ioas_map,
  ref,
} from "../src/iommufd-utils.js";
import { errnoName } from "@x/kernel";
const env = createSelftestEnv({ bufferSize: 65536, hugeAligned: true });
const { libc } = env;
const fd = libc.open("/dev/iommu", 2);
const ioas = ref(0);
_test_ioctl_ioas_alloc(env, fd, ioas);
const ids = ref({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });
console.log("mock", _test_cmd_mock_domain(env, fd, ioas.v, ids), libc.errno);
const iova = ref(1n << 24n);
const rc = _test_ioctl_ioas_map(env, fd, ioas.v, env.buffer, 4096, iova, 7);
console.log(" map", rc, errnoName(libc.errno), iova.v);

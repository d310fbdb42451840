// The README example, kept runnable.
import { it } from "vitest";
import {
  MOCK_APERTURE_START,
  createSelftestEnv,
  kselftest,
  registerVitest,
  teardown_iommufd,
  test_cmd_mock_domain,
  test_err_ioctl_ioas_unmap,
  test_ioctl_ioas_alloc,
  test_ioctl_ioas_map_fixed,
  test_ioctl_ioas_unmap,
} from "../src/index.js";
import { ENOENT, O_RDWR } from "@x/kernel";

const {
  harness,
  FIXTURE,
  FIXTURE_SETUP,
  FIXTURE_TEARDOWN,
  FIXTURE_VARIANT,
  FIXTURE_VARIANT_ADD,
  TEST_F,
} = kselftest(() => createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true }));

const my_ioas = FIXTURE(
  "my_ioas",
  () => ({ fd: -1, ioas_id: 0 }),
  FIXTURE_VARIANT<{ domains: number }>(),
);
FIXTURE_VARIANT_ADD(my_ioas, "no_domain", { domains: 0 });
FIXTURE_VARIANT_ADD(my_ioas, "mock_domain", { domains: 1 });

FIXTURE_SETUP(my_ioas, (self, variant, t) => {
  self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
  t.ASSERT_NE(-1, self.fd);
  self.ioas_id = test_ioctl_ioas_alloc(t);
  for (let i = 0; i < variant.domains; i++) test_cmd_mock_domain(t, self.ioas_id);
});
FIXTURE_TEARDOWN(my_ioas, (self, _variant, t) => teardown_iommufd(t, self.fd));

TEST_F(my_ioas, "no_split", (_self, _variant, t) => {
  const { buffer, PAGE_SIZE } = t.sys;
  test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE * 2, MOCK_APERTURE_START);
  test_err_ioctl_ioas_unmap(t, ENOENT, MOCK_APERTURE_START, PAGE_SIZE); // no partial unmap
  test_ioctl_ioas_unmap(t, MOCK_APERTURE_START, PAGE_SIZE * 2);
});

registerVitest(harness.instances(), it); // my_ioas.no_domain.no_split, my_ioas.mock_domain.no_split

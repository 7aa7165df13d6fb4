export { RadosCluster, RadosError, type RadosTarget } from './rados-cluster.js';
export { RadosIoctx, type Locker } from './rados-ioctx.js';
export { RadosDevice, DEFAULT_OBJECT_SIZE, dataObject, headerObject, type ObjectStore, type RadosDeviceHeader, type RadosDeviceOptions } from './rados-device.js';
export { LibRadosMissing } from './librados.js';
export { errnoName, RADOS_ERR } from './errno.js';
export { lockDevice, deviceLockers, fenceAndBreak, ownerCookie, cookieFields, describeHolder, DeviceLockedError, type HeldLock } from './rados-lock.js';

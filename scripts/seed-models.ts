/**
 * The local stack's model seeding (scripts/stack.ts, tests, benchmarks) lives
 * with the upload it shares its code with: scripts/models-upload.ts.
 */
export { seedModels } from './models-upload';

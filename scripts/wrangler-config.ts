import { unstable_readConfig } from 'wrangler';

/**
 * wrangler.toml as wrangler itself reads it, for one environment, without its
 * warning that environments do not inherit [vars]: the file means that (the
 * test and production Workers run on functions/config.ts's defaults plus
 * their own vars), and wrangler prints it on every read.
 */
export function readWranglerConfig(config: string, env?: string): ReturnType<typeof unstable_readConfig> {
  const level = process.env.WRANGLER_LOG;
  process.env.WRANGLER_LOG = 'error';
  try {
    return unstable_readConfig({ config, env });
  } finally {
    if (level === undefined) delete process.env.WRANGLER_LOG;
    else process.env.WRANGLER_LOG = level;
  }
}

import { Hono } from 'hono';
import type { EdgeEnv } from '../context';

export const models = new Hono<EdgeEnv>();

models.get('/v1/models', (c) => {
  const { modelId, draftModel } = c.var.config;
  return c.json({
    object: 'list',
    data: [{ id: modelId, object: 'model', created: 0, owned_by: 'edgespec', draft: draftModel }],
  });
});

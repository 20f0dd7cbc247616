import { Hono } from 'hono';
import { edgeConfig } from '../config';
import type { Env } from '../env';

export const models = new Hono<{ Bindings: Env }>();

models.get('/v1/models', (c) => {
  const { modelId, draftModel } = edgeConfig(c.env);
  return c.json({
    object: 'list',
    data: [{ id: modelId, object: 'model', created: 0, owned_by: 'edgespec', draft: draftModel }],
  });
});
